"""Stage 6, day two: changing a running cluster without breaking it (docs/day-two.md).

planning.py  the plan against the bundle (stable addresses, spare slots), rekey checks
diff.py      what a render changes, per member and file, and what must be done by hand
report.py    that diff as text and as JSON
rollout.py   the order to roll out a new key
"""
