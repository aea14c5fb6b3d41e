// Package k8s holds the Kubernetes manifests of geoproxy. It has no code:
// its tests decode every manifest strictly into the Kubernetes API types and
// check that they fit together and with geoproxy (probes, drain, selectors,
// the config), and check the other deployment files under deploy/ (the
// docker compose file, the systemd unit) and the Dockerfile the same way.
//
//	cd deploy/k8s && go test ./...
package k8s
