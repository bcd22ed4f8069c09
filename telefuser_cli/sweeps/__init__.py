"""What a sweep leaves beside its jobs for a person: the contact sheet (sweep.png) and the page (index.html).

Torch-free: both are built from the sweep's rows (reports.py) and the videos on disk.
"""
