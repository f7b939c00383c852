"""Probes: SUPERB probes on frozen features, the frame-level phone probe, judging with intervals, the s3prl upstream
and task-aware head scores."""
