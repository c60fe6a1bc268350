"""Judgement: tiers and findings (`tiers`), suite results (`results`), the per-tensor comparison
(`compare`, `blocked`) and the drift statistics of closed loops (`drift`)."""
