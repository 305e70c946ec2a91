#!/usr/bin/env bash
# Firecracker's getting-started sequence (docs/getting-started.md of Firecracker: the logger,
# the boot source, the root drive, a network interface, InstanceStart), replayed with curl over
# wisp-vmm's API socket, request for request. Each answer must be 204.
#
#   getting_started.sh SOCKET KERNEL ROOTFS "BOOT_ARGS" TAP LOGFILE
set -euo pipefail
if [ $# -ne 6 ]; then
  echo "usage: $0 SOCKET KERNEL ROOTFS BOOT_ARGS TAP LOGFILE" >&2
  exit 2
fi
API_SOCKET=$1 KERNEL=$2 ROOTFS=$3 KERNEL_BOOT_ARGS=$4 TAP_DEV=$5 LOGFILE=$6
FC_MAC="06:00:AC:10:00:02"

put() { # PATH DATA: one PUT, its status must be 204
  local status
  status=$(curl -sS -o /dev/stderr -w '%{http_code}' -X PUT --unix-socket "$API_SOCKET" \
    -H 'Accept: application/json' -H 'Content-Type: application/json' \
    --data "$2" "http://localhost/$1")
  if [ "$status" != 204 ]; then
    echo "getting_started.sh: PUT /$1: status $status, expected 204" >&2
    exit 1
  fi
  echo "PUT /$1: $status"
}

# Set log file
touch "$LOGFILE"
put logger "{\"log_path\": \"${LOGFILE}\", \"level\": \"Debug\", \"show_level\": true, \"show_log_origin\": true}"
# Set boot source
put boot-source "{\"kernel_image_path\": \"${KERNEL}\", \"boot_args\": \"${KERNEL_BOOT_ARGS}\"}"
# Set rootfs
put drives/rootfs "{\"drive_id\": \"rootfs\", \"path_on_host\": \"${ROOTFS}\", \"is_root_device\": true, \"is_read_only\": false}"
# Set network interface
put network-interfaces/net1 "{\"iface_id\": \"net1\", \"guest_mac\": \"$FC_MAC\", \"host_dev_name\": \"$TAP_DEV\"}"
# API requests are handled asynchronously, it is important the configuration is
# set, before `InstanceStart`.
sleep 0.015
# Start microVM
put actions "{\"action_type\": \"InstanceStart\"}"
