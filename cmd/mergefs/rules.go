package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mergefs/mergefs/merge"
)

// loadRules reads and checks a rules file; "" is no rules.
func loadRules(file string) (*merge.Rules, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--rules: %w", err)
	}
	rules, err := merge.ParseRules(data)
	if err != nil {
		return nil, fmt.Errorf("--rules %s: %w", file, err)
	}
	return rules, nil
}

// reloadRulesOnHangup re-reads the rules file on each SIGHUP (systemctl reload) and hands valid rules
// to set; a file that cannot be read or is invalid is logged and the rules in force stay. It returns
// a function that stops it.
func reloadRulesOnHangup(file string, set func(*merge.Rules), logger *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
			}
			if file == "" {
				logger.Info("SIGHUP: no --rules file to reload")
				continue
			}
			rules, err := loadRules(file)
			if err != nil {
				logger.Error("SIGHUP: rules not reloaded; the rules in force stay", "err", err)
				continue
			}
			set(rules)
			logger.Info("SIGHUP: rules reloaded", "file", file, "rules", len(rules.List()))
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}
