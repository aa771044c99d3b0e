"""The PACS side of a study read: QIDO-RS / WADO-RS / STOW-RS against a configured
PACS, which instances a read shows the model, the Structured Report, and webhooks."""
