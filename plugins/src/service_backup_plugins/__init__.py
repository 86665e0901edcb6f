"""Built-in service-backup plugins: the local destination, command hooks, CF alerts."""
