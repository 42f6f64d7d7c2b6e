"""The product at run time: the content store, the tagging service (decision rule + duplicate
screen), the HTTP API, the hourly ingest job and the feedback dataset builder.

This path imports numpy, onnxruntime, tokenizers, FAISS, FastAPI and SQLAlchemy, never torch,
scikit-learn, matplotlib or scipy (tests/unit/test_architecture.py checks it at run time).
"""
