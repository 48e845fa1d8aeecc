package events

import (
	"encoding/json"
	"testing"
)

// BenchmarkEncodeResult encodes a status-sized result event.
func BenchmarkEncodeResult(b *testing.B) {
	ok, dur := true, int64(3)
	data := json.RawMessage(`{"project":"po","services":[{"service":"web","state":"running","health":"healthy","uptime_s":11,"ports":["127.0.0.1:32779->8080/tcp"]},{"service":"worker","state":"running","uptime_s":11}],"summary":{"containers":2,"running":2,"healthy":1},"cached":true}`)
	ev := &Event{RequestID: "0df37b77c00d46d4ad7974a7c573b383", Project: "po", Action: "status", Kind: KindResult, Seq: 2,
		TS: "2026-11-27T07:05:27.41Z", User: "telegram:123456", OK: &ok, Data: data, DurationMS: &dur}
	b.ReportAllocs()
	for range b.N {
		if _, err := json.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}
