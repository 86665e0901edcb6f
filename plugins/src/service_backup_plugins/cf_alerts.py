"""Placeholder: the Cloud Foundry notifications alerter lands here."""
