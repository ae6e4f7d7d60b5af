"""The response cache: exact and semantic, partitioned by tenant by construction (see ``service``)."""
