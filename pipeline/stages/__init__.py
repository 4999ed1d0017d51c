"""Thin stage entry points: parse args, read params, call the library, write outputs atomically, log to MLflow."""
