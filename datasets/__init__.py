"""Raw corpus layouts -> validated samples -> sharded WebDataset (Ray Data), and back.

Note: this top-level package shadows Hugging Face `datasets`; the project does not use that library.
"""
