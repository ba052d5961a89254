#!/usr/bin/env bash
# mosquitto-config.sh DIR PORT N: a Mosquitto 2.0 configuration equivalent
# to the benchmark household (scripts/bench/gen-household.sh N) in DIR:
# mosquitto.conf (loopback listener on PORT, no anonymous clients), passwd
# (mosquitto_passwd: an, doctor, stranger, thermo-1, watch-1, lock-1,
# sensor-1…N with the household's passwords) and acl.
#
# Mosquitto cannot rewrite payloads: where Veil gives the doctor a
# temperature rounded to 0.1, the ACL can only allow it raw or deny it.
# It allows it (raw), so the doctor receives as many messages as under Veil.
set -euo pipefail
dir=$1 port=$2 n=$3
mkdir -p "$dir"
: > "$dir/passwd"
chmod 600 "$dir/passwd"
mosquitto_passwd -b "$dir/passwd" an an-secret
mosquitto_passwd -b "$dir/passwd" doctor doctor-secret
mosquitto_passwd -b "$dir/passwd" stranger stranger-secret
for t in thermo-1 watch-1 lock-1 $(seq -f 'sensor-%g' 1 "$n"); do
  mosquitto_passwd -b "$dir/passwd" "$t" "$t-secret"
done
cat > "$dir/acl" <<ACL
# The household of examples/bootstrap.yaml as a Mosquitto ACL.
# an owns every thing: reads all their data and state, may command them.
user an
topic read things/#
topic write things/+/cmd/#

# The doctor: An's policies doctor-location, doctor-heart-rate, doctor-thermo
# and the benchmark's doctor-bench-temperature. Veil rewrites (accuracy 0.01
# on positions, 0.1 on temperatures); Mosquitto can only pass them raw.
user doctor
topic read things/watch-1/data/location
topic read things/watch-1/data/heart_rate
topic read things/+/data/temperature

# The stranger: nothing (no lines: every topic denied).
user stranger

# Things publish their own data and state only (client id = username = thing id).
pattern write things/%u/data/#
pattern write things/%u/state
pattern read things/%u/cmd/#
ACL
cat > "$dir/mosquitto.conf" <<CONF
# Veil broker benchmark: Mosquitto with an ACL equivalent to the household.
per_listener_settings false
listener $port 127.0.0.1
allow_anonymous false
password_file $dir/passwd
acl_file $dir/acl
persistence true
persistence_location $dir/
autosave_interval 1800
max_connections -1
max_queued_messages 10000
max_inflight_messages 0
log_dest stderr
log_type error
log_type warning
user root
CONF
