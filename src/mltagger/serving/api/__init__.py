"""The tagging service's JSON API: `make serve [WORKERS=N]` (FastAPI + uvicorn, config
`conf/serve.yaml`). `create_app` (in `app.py`) assembles the routers of this package and the
pages of `mltagger.serving.pages` over one loaded model and store.

Endpoints (OpenAPI document at /openapi.json, pages at /docs); who may call them:
  POST /predict          public, rate limited per client without a key   tag 1..max_batch items
  POST /feedback         public, rate limited per client without a key   report a wrong tag
  GET  /items, /items/{id}, /health, /metrics    public reads; without a key of role review,
                                                 published items only, in their public fields
  POST /items            key with role ingest (or admin)                 screen, tag, store one
  GET  /review, POST /review/{id}   key with role review (or admin)      the people in the loop

Where each lives: `items.py` (/predict, /items), `feedback.py` (/feedback), `review.py`
(/review), `operations.py` (/health, /metrics); who is calling and what the endpoints share:
`mltagger.serving.access`; the request models each app builds from its model's tags and its
limits: `per_app.py`. Routes are added with `router.add_api_route` after each function, not
with a decorator: mutmut (`make mutation`) leaves decorated functions alone.
"""

from mltagger.serving.api.app import create_app

__all__ = ["create_app"]
