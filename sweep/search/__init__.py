"""What to try: search spaces (YAML, validated into typed objects), Optuna samplers and known
points, the study's name, and population-based training's rules over the space."""
