// Package natsbus is Berth's NATS JetStream adapter: it declares the
// command and event streams and the two command consumers, pulls commands
// into the handlers' Dispatcher, answers commands for unknown actions, and
// publishes events.
package natsbus
