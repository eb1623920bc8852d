package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names a file for a CPU profile of the whole mount's life, for
// performance work (scripts/bench --cpuprofile-dir). Deliberately not a flag:
// it is not for operators.
const cpuProfileEnv = "MERGEFS_CPUPROFILE"

// startCPUProfile starts profiling if MERGEFS_CPUPROFILE is set; the returned
// func stops it and writes the profile.
func startCPUProfile(logger *slog.Logger) (stop func(), err error) {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	logger.Info("writing a CPU profile", "file", path)
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			logger.Error("CPU profile", "file", path, "err", err)
		}
	}, nil
}
