#!/usr/bin/python3
# wgkube VM-test stand-in: NOT kube-apiserver.
#
# Started by the kubeadm stand-in on "kubeadm init". Serves HTTPS on
# ADDRESS:PORT with the given certificate and answers GET /readyz, /livez and
# /healthz with 200 "ok", so the workers' wait-for-API phase succeeds over the
# WireGuard VPN in the VM test. Issue 17 (upgrade): GET /version says the
# cluster version (what `kubeadm init` or the last `kubeadm upgrade apply` set,
# /var/lib/wgkube-standin/cluster-version) and GET /api/v1/nodes/NAME whether
# the node is cordoned (the stand-in kubectl's drain/uncordon, nodes.json).
# Issue 14 (several control planes): GET /api/v1/namespaces/kube-system/configmaps/
# kubeadm-config serves the ClusterConfiguration `kubeadm init` uploaded (a joining
# control plane reads it, as real kubeadm does), and GET /wgkube-standin/node
# (test-only, no real API has it) names the machine that answered, so the test
# sees which control plane a node's local endpoint (haproxy) reached.
# Everything else is 404.
# Usage: standin-apiserver.py ADDRESS PORT CERT KEY
import http.server
import json
import socket
import ssl
import sys

STATE = "/var/lib/wgkube-standin"


def _read(name, default):
    try:
        with open("%s/%s" % (STATE, name)) as f:
            return f.read()
    except OSError:
        return default


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "wgkube-standin-apiserver"

    def do_GET(self):  # noqa: N802 - http.server API
        if self.path.split("?")[0] in ("/readyz", "/livez", "/healthz"):
            body, code = b"ok", 200
        elif self.path == "/version":
            version = _read("cluster-version", "").strip() or "unknown"
            body, code = json.dumps({"gitVersion": version}).encode(), 200
        elif self.path.startswith("/api/v1/nodes/"):
            name = self.path[len("/api/v1/nodes/"):]
            try:
                nodes = json.loads(_read("nodes.json", "{}"))
            except ValueError:
                nodes = {}
            spec = {"unschedulable": True} if nodes.get(name, {}).get("unschedulable") else {}
            body, code = json.dumps({"kind": "Node", "metadata": {"name": name}, "spec": spec}).encode(), 200
        elif self.path == "/api/v1/namespaces/kube-system/configmaps/kubeadm-config":
            text = _read("kubeadm-config.yaml", None)
            if text is None:
                body, code = b"configmaps \"kubeadm-config\" not found", 404
            else:
                body, code = json.dumps({"kind": "ConfigMap", "metadata": {"name": "kubeadm-config"},
                                         "data": {"ClusterConfiguration": text}}).encode(), 200
        elif self.path == "/wgkube-standin/node":
            body, code = socket.gethostname().encode(), 200
        else:
            body, code = b"not found (wgkube stand-in API)", 404
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("standin-apiserver: %s %s\n" % (self.address_string(), fmt % args))


def main():
    address, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd = http.server.ThreadingHTTPServer((address, port), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    sys.stderr.write("standin-apiserver: listening on https://%s:%d\n" % (address, port))
    httpd.serve_forever()


if __name__ == "__main__":
    main()
