# Least-privilege policy for Valet on a KV v2 mount `secret` with prefix `valet/`
# (the defaults of [vault] mount and prefix). Change both paths if you change those settings.

# Records: read (with version, for check-and-set), create and update.
path "secret/data/valet/*" {
  capabilities = ["create", "read", "update"]
}

# Listing (start-up, ListGrants, store copy) and removal (DeleteProvider, Revoke): Valet deletes
# a record with all its versions through the metadata endpoint.
path "secret/metadata/valet/*" {
  capabilities = ["list", "delete"]
}

# The daemon looks up and renews its own token.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
