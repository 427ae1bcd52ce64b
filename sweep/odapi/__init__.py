"""The OD API adapter: rendering a trial's pipeline.config, the train and eval jobs (the only
place that trains), reading their event files, detections, the TF 2.15 compatibility patch,
the model templates and ``sweep init``'s model folder."""
