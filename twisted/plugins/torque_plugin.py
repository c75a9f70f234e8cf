# Keep this file to one line of wiring: an import error here makes
# ``twistd torque`` print only "Unknown command: torque".
from twisted.application.service import ServiceMaker

torque = ServiceMaker("torque", "torque.tap", "A web-hook task queue on Redis.", "torque")
