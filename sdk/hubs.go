package sdk

import (
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// hubsScheme is the resolver scheme of a Client given several hubs.
const hubsScheme = "phx-hubs"

// splitHubs returns the addresses of a comma-separated target, trimmed,
// without empty ones.
func splitHubs(target string) []string {
	var out []string
	for a := range strings.SplitSeq(target, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// hubsTarget returns what to dial for target. One address is dialed as it
// is. Several get a resolver of their own that hands gRPC the fixed list,
// one endpoint per hub in the given order; gRPC's default policy,
// pick_first, connects to the first that answers and fails over to the
// others when its connection breaks. Each address carries its host as the
// TLS server name, so every hub's certificate is checked against its own
// name rather than the channel's.
func hubsTarget(target string) (string, []grpc.DialOption, error) {
	addrs := splitHubs(target)
	if len(addrs) == 0 {
		return "", nil, fmt.Errorf("no hub address in %q", target)
	}
	if len(addrs) == 1 {
		return addrs[0], nil, nil
	}
	eps := make([]resolver.Endpoint, len(addrs))
	for i, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return "", nil, fmt.Errorf("hub address %q: %w", a, err)
		}
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: a, ServerName: host}}}
	}
	r := manual.NewBuilderWithScheme(hubsScheme)
	r.InitialState(resolver.State{Endpoints: eps})
	return hubsScheme + ":///hubs", []grpc.DialOption{grpc.WithResolvers(r)}, nil
}
