"""Splitting a check over processes or machines and merging the parts into one verdict."""
