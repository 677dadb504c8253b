package jsread_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phx-exchange/phx/server/internal/jsread"
)

// BenchmarkRead reads a stream of 10,000 messages of 200 bytes from start
// to end: through Read, and through nats.go's ordered consumer a Fetch at a
// time (which creates a consumer per Fetch), as the hub read before.
func BenchmarkRead(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	js := startJetStream(b)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ITEMS", Subjects: []string{"item.>"}})
	if err != nil {
		b.Fatal(err)
	}
	const n = 10_000
	data := make([]byte, 200)
	for i := range n {
		if _, err := js.PublishAsync(fmt.Sprintf("item.%d", i%100), data); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	b.Run("jsread", func(b *testing.B) {
		for b.Loop() {
			got := 0
			if err := jsread.Read(ctx, s, jsread.Options{}, func(jetstream.Msg, *jetstream.MsgMetadata) error { got++; return nil }); err != nil || got != n {
				b.Fatalf("read %d: %v", got, err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("ordered-fetch", func(b *testing.B) {
		for b.Loop() {
			cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for got < n {
				batch, err := cons.Fetch(jsread.Batch, jetstream.FetchMaxWait(time.Second))
				if err != nil {
					b.Fatal(err)
				}
				for m := range batch.Messages() {
					got++
					if md, _ := m.Metadata(); md.NumPending == 0 {
						break // as the hub did: not waiting for the pull to end
					}
				}
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
