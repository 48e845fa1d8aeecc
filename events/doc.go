// Package events is Berth's wire contract: the subjects commands and events
// travel on, the JSON bodies of commands and events, and the closed set of
// error codes. It imports no adapter, so bots and tools can depend on it alone.
package events
