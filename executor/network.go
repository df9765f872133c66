package executor

import (
	"fmt"
	"slices"
	"strings"
)

// The network modes of a RUN step (RunSpec.Network), as BuildKit names
// them.
const (
	// NetworkDefault is an isolated network namespace per build whose
	// outbound traffic goes through user-mode networking (pasta, or
	// slirp4netns), which cannot reach the host's loopback. "" means the
	// same.
	NetworkDefault = "default"
	// NetworkNone is an empty network namespace: only lo, up.
	NetworkNone = "none"
	// NetworkHost is the host's own network namespace; it needs
	// EntitlementNetworkHost.
	NetworkHost = "host"
)

// EntitlementNetworkHost is the entitlement that host networking (kiln
// build --network=host, RUN --network=host) needs: a step in the host's
// network namespace reaches every service on the host's loopback and the
// host's abstract unix sockets.
const EntitlementNetworkHost = "network.host"

// checkEntitlement refuses an entitlement kiln does not know.
func checkEntitlement(e string) error {
	if !slices.Contains(entitlements, e) {
		return fmt.Errorf("unknown entitlement %q (known: %s)", e, strings.Join(entitlements, ", "))
	}
	return nil
}

// CheckNetwork refuses a network mode that does not exist, and host
// networking that s does not allow. The error says what to add.
func CheckNetwork(mode string, s Sandbox) error {
	switch mode {
	case "", NetworkDefault, NetworkNone:
		return nil
	case NetworkHost:
		if !s.Allows(EntitlementNetworkHost) {
			return fmt.Errorf("host networking lets RUN steps reach the host's local services: it needs --allow %s", EntitlementNetworkHost)
		}
		return nil
	}
	return fmt.Errorf("unknown network mode %q (want default, none or host)", mode)
}
