package events

import "testing"

// Every action, dotted ones included, survives a round trip through the
// routed command subject; what is not one is refused.
func TestHostCommandRoundTrip(t *testing.T) {
	s := NewSubjects("berth")
	for _, a := range Actions() {
		h, p, got, err := s.ParseHostCommand(s.HostCommand("h-1", "po", a))
		if err != nil || h != "h-1" || p != "po" || got != a {
			t.Errorf("%s: %q %q %q %v", a, h, p, got, err)
		}
	}
	for _, bad := range []string{"berth.host.h1.cmd.po", "berth.host.h1.evt.po.status", "berth.host..cmd.po.status", "berth.cmd.po.status", "other.host.h1.cmd.po.status"} {
		if _, _, _, err := s.ParseHostCommand(bad); err == nil {
			t.Errorf("%s parsed as a routed command", bad)
		}
	}
}
