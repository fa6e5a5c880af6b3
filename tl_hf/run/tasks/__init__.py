"""Task modules: each fills in the run template with its data, model and metrics."""
