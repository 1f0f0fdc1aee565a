"""The monitor's panes: batch grid, uploads waiting, rate-limit countdown, log stream, summary bar."""
