#!/bin/sh
# Create the CloudStack (4.20+) webhook that delivers events to remedy's receiver.
#
# The daemon's jobs file says:
#   listen: 0.0.0.0:9187            # or behind a proxy / a Kubernetes Service
#   listen_public: true
#   triggers:
#     cloudstack: { secret: { file: /etc/remedy/webhook-secret } }
#
# The same secret goes to CloudStack as the webhook's secret key: every delivery is then signed
# (X-CS-Signature) and the daemon refuses unsigned or wrongly signed ones (401).
set -eu
REMEDY_URL=${REMEDY_URL:-http://remedy.zone1.example.com:9187/hooks/cloudstack}
SECRET_FILE=${SECRET_FILE:-/etc/remedy/webhook-secret}

# A new random secret, readable by the daemon only.
if [ ! -s "$SECRET_FILE" ]; then
    umask 077
    head -c 32 /dev/urandom | base64 > "$SECRET_FILE"
fi

# cloudmonkey (cmk), with a root admin profile: scope Global delivers every account's events
# (Local: the caller's account; Domain: a domain's). Use https in production and keep
# sslverification=true.
cmk create webhook \
    name=remedy-zone1 \
    description="remedy daemon: event-driven self-healing" \
    payloadurl="$REMEDY_URL" \
    secretkey="$(cat "$SECRET_FILE")" \
    sslverification=true \
    scope=Global \
    state=Enabled

# What was delivered, and CloudStack's record of the answers (200 = delivered):
#   cmk list webhookdeliveries webhookid=<id>
# A delivery the daemon refused (e.g. an event type no rule takes: 400) is retried by
# CloudStack up to webhook.delivery.retries times, then kept as failed.
