"""One construct per file: storage, registry, roles, runtime (functions), registry_api, ..."""
