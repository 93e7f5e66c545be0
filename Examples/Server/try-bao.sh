export BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN=root
bao kv put secret/myapp password=s3cret
bao kv get secret/myapp
echo 'path "secret/data/myapp" { capabilities = ["read"] }' | bao policy write myapp-read -
LIMITED=$(bao token create -policy=myapp-read -field=token)
BAO_TOKEN=$LIMITED bao kv get -field=password secret/myapp          # allowed: prints s3cret
BAO_TOKEN=$LIMITED bao kv put secret/myapp password=mine            # refused: Code: 403, permission denied
