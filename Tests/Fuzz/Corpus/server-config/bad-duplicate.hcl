storage "memory" {}
storage "memory" {}
