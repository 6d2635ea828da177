"""Where results go: study folders and URIs (local, S3, GCS), whole-file writes, MLflow tracking and its later
sync, and the exported files (trials.csv, best.yaml)."""
