// Package natstest starts in-process nats-servers with JetStream for the
// tests of the packages that use JetStream directly.
package natstest

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Start runs a nats-server with JetStream on 127.0.0.1:port (-1: a free
// port), storing in dir, and shuts it down when the test ends. Started
// again on the same port and dir, it finds its streams again.
func Start(t testing.TB, port int, dir string) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns
}
