// The component's entry (componentize-js builds this file, see build.sh): the
// processor world's exports, made by the SDK from the FlightsDelay class.
import * as host from "sluice:plugin/host@0.1.0";
import { exportProcessor } from "../../../../sdk/js/sluice.js";
import { FlightsDelay } from "./flights_delay.js";

export const { configure, process } = exportProcessor(FlightsDelay, host);
