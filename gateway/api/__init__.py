"""The HTTP API: one blueprint per resource, thin views over the services."""
