// {{name}}: the component's entry, which componentize-js builds (see build.sh).
// The keyed-processor world's exports (`configure`, `processKeyed`), made by
// the SDK from the Seen class; `host` gives the SDK's `log` the daemon's log,
// `tables` gives `ctx.lookup` the daemon's lookup tables ([tables.NAME]).
import * as host from "sluice:plugin/host@0.2.0";
import * as tables from "sluice:plugin/tables@0.2.0";
import { exportKeyedProcessor } from "./sluice.js";
import { Seen } from "./processor.js";

export const { configure, processKeyed } = exportKeyedProcessor(Seen, host, tables);
