// {{name}}: the component's entry, which componentize-js builds (see build.sh).
// The processor world's exports (`configure`, `process`), made by the SDK from
// the Tagger class; `host` gives the SDK's `log` the daemon's log.
import * as host from "sluice:plugin/host@0.1.0";
import { exportProcessor } from "./sluice.js";
import { Tagger } from "./processor.js";

export const { configure, process } = exportProcessor(Tagger, host);
