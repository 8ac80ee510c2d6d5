# The same for a KV v1 mount `secret` with prefix `valet/` (servers without KV v2). KV v1 has no
# check-and-set: run a single Valet replica on it.
path "secret/valet/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
