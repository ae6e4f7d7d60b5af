"""The Responses API per tenant: models (the request), context (what the model is given, citations), objects (wire
shapes and stream events), store (sealed rows), service (the use cases)."""
