"""The HTTP door: the seed's Campaigns API over FastAPI, thin over the same service functions as the CLI."""
