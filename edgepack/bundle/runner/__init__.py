"""What a bundle carries to run its artifact: `run.py` (copied with devices/worker.py and the
backend's session module into the bundle's runner/ folder). Nothing here imports edgepack."""
