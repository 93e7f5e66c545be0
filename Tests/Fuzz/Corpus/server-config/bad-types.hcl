listener "tcp" { max_connections = -1 http_idle_timeout = [] }
log_level = 5
