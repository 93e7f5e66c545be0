import hvac
c = hvac.Client(url="http://127.0.0.1:8200", token="root")
c.secrets.kv.v2.create_or_update_secret(path="myapp", secret={"password": "s3cret"}); print(c.secrets.kv.v2.read_secret_version(path="myapp", raise_on_deleted_version=True)["data"]["data"])
c.sys.create_or_update_policy(name="myapp-read", policy='path "secret/data/myapp" { capabilities = ["read"] }')
limited = hvac.Client(url="http://127.0.0.1:8200", token=c.auth.token.create(policies=["myapp-read"])["auth"]["client_token"])
limited.secrets.kv.v2.create_or_update_secret(path="myapp", secret={"password": "mine"})  # raises hvac.exceptions.Forbidden (403)
