package ffserver

import "time"

// SetEventHeartbeat makes s's idle event streams send their keep-alive every d instead of
// every 15s, for tests that cannot wait that long. Call it before s serves.
func SetEventHeartbeat(s *Server, d time.Duration) { s.heartbeat = d }
