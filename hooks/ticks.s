// Empty: its presence lets ticks.go declare cputicks without a body (the
// body is the runtime's, by go:linkname).
