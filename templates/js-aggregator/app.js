// {{name}}: the component's entry, which componentize-js builds (see build.sh).
// The aggregator world's exports, made by the SDK from the Top class; `host`
// gives the SDK's `log` the daemon's log.
import * as host from "sluice:plugin/host@0.1.0";
import { exportAggregator } from "./sluice.js";
import { Top } from "./aggregator.js";

export const { configure, create, accumulate, merge, finish } = exportAggregator(Top, host);
