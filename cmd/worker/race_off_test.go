//go:build !race

package main

// raceBuild is set when the tests run with -race: the worker processes
// they start are race-built too.
const raceBuild = false
