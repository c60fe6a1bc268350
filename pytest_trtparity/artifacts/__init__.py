"""Everything the gate leaves behind for people and CI: summary.json, plots, report.md."""
