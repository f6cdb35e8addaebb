"""Salesforce connector: leads and opportunities over the REST and Bulk 2.0 APIs."""
