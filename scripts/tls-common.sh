# Sourced by the TLS benchmark scripts: a work directory removed on exit
# (with every background job), an ECDSA P-256 certificate for localhost
# in it (cert.pem, key.pem, and combined.pem for HAProxy), and helpers.
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${TSECHO_BIN:-$here/target/release/tsecho}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem" 2>/dev/null
openssl req -x509 -key "$work/key.pem" -out "$work/cert.pem" -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"

# Returns once something accepts on 127.0.0.1:$1.
wait_port() { until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do sleep 0.1; done; }
