export BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN=root
bao kv put secret/myapp password=s3cret
echo 'path "secret/data/myapp" { capabilities = ["read"] }' | bao policy write myapp-read -
bao auth enable approle
bao write auth/approle/role/app token_policies=myapp-read token_ttl=1h secret_id_num_uses=1
ROLE_ID=$(bao read -field=role_id auth/approle/role/app/role-id)
WRAPPED=$(bao write -wrap-ttl=60s -field=wrapping_token -f auth/approle/role/app/secret-id)
SECRET_ID=$(bao unwrap -field=secret_id $WRAPPED)                    # single use: a second unwrap fails
APP=$(bao write -field=token auth/approle/login role_id=$ROLE_ID secret_id=$SECRET_ID)
BAO_TOKEN=$APP bao kv get -field=password secret/myapp                # allowed by myapp-read
BAO_TOKEN=$APP bao kv put secret/myapp password=mine                  # refused: 403
