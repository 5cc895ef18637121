variable "out" { type = string }
variable "name" { type = string }
variable "version" { type = string }
variable "greeting" { type = string }
source "null" "app" { communicator = "none" }
build {
  sources = ["source.null.app"]
  provisioner "shell-local" {
    inline = [
      "mkdir -p ${var.out}",
      "printf '#!/bin/sh\\necho \"%s\"\\n' '${var.greeting}' > ${var.out}/entrypoint",
      "chmod 755 ${var.out}/entrypoint",
      "echo '${var.name} ${var.version}' > ${var.out}/VERSION",
    ]
  }
  post-processor "artifice" {
    files = ["${var.out}/entrypoint", "${var.out}/VERSION"]
  }
}
