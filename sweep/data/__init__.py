"""Data in the tutorial's layout: annotations (VOC, CSV, GTSRB) converted to TFRecords, label
maps, record inspection, TFRecord framing, and the demo's synthetic traffic-sign set."""
